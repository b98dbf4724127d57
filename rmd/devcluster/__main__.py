from rmd.devcluster.cli import main

raise SystemExit(main())
