from rmd_dev.cli import main

raise SystemExit(main())
