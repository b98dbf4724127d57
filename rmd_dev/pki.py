"""Certificates, keys and tokens for the local control plane, made with openssl."""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

SERVICE_CLUSTER_IP = "10.96.0.1"


@dataclass(frozen=True)
class Pki:
    """Where the control plane's credentials live."""

    root: Path

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def ca_crt(self) -> Path:
        return self.root / "ca.crt"

    @property
    def apiserver_key(self) -> Path:
        return self.root / "apiserver.key"

    @property
    def apiserver_crt(self) -> Path:
        return self.root / "apiserver.crt"

    @property
    def sa_key(self) -> Path:
        return self.root / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.root / "sa.pub"

    @property
    def tokens_csv(self) -> Path:
        return self.root / "tokens.csv"

    @property
    def admin_token_file(self) -> Path:
        return self.root / "admin.token"

    def admin_token(self) -> str:
        return self.admin_token_file.read_text().strip()


def _openssl(args: list[str], *, cwd: Path) -> None:
    result = subprocess.run(
        ["openssl", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def create_pki(root: Path) -> Pki:
    """Create a CA, an apiserver serving certificate, a service-account key pair and tokens.

    Existing files are kept, so a restarted cluster keeps its credentials (and the tokens
    handed out before stay valid).
    """
    pki = Pki(root)
    root.mkdir(parents=True, exist_ok=True)
    if not pki.ca_crt.exists():
        _openssl(["genrsa", "-out", "ca.key", "2048"], cwd=root)
        _openssl(
            [
                "req",
                "-x509",
                "-new",
                "-nodes",
                "-key",
                "ca.key",
                "-sha256",
                "-days",
                "3650",
                "-subj",
                "/CN=rmd-dev-cluster-ca",
                "-out",
                "ca.crt",
            ],
            cwd=root,
        )
    if not pki.apiserver_crt.exists():
        (root / "apiserver.ext").write_text(
            "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,"
            f"DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:{SERVICE_CLUSTER_IP}\n"
            "extendedKeyUsage=serverAuth\n"
        )
        _openssl(["genrsa", "-out", "apiserver.key", "2048"], cwd=root)
        _openssl(
            [
                "req",
                "-new",
                "-key",
                "apiserver.key",
                "-subj",
                "/CN=kube-apiserver",
                "-out",
                "apiserver.csr",
            ],
            cwd=root,
        )
        _openssl(
            [
                "x509",
                "-req",
                "-in",
                "apiserver.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "3650",
                "-sha256",
                "-extfile",
                "apiserver.ext",
                "-out",
                "apiserver.crt",
            ],
            cwd=root,
        )
    if not pki.sa_key.exists():
        _openssl(["genrsa", "-out", "sa.key", "2048"], cwd=root)
        _openssl(["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"], cwd=root)
    if not pki.tokens_csv.exists():
        admin = secrets.token_hex(24)
        pki.admin_token_file.write_text(admin + "\n")
        pki.tokens_csv.write_text(f'{admin},admin,admin-uid,"system:masters"\n')
    for secret in (pki.ca_key, pki.apiserver_key, pki.sa_key, pki.tokens_csv, pki.admin_token_file):
        secret.chmod(0o600)
    return pki
