from rmd.lazykube import install as _install_lazy_kubernetes_classes

_install_lazy_kubernetes_classes()  # before anything imports kubernetes_asyncio (rmd/lazykube.py)
