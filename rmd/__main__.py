from rmd.cli import main

raise SystemExit(main())
