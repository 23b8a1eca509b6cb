"""One module per dashboard page (each calls ``dash.register_page``; imported by ``dashboard.app``)."""
