from tokenprune.demos.app import main

raise SystemExit(main())
