from lungview.cli import main

raise SystemExit(main())
