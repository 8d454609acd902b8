"""Reports: tables and pictures made from finished runs."""
