"""Roster files (units, members): CSV or XLSX, English or Vietnamese headers, all-or-nothing."""
