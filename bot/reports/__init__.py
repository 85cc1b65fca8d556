"""Reports a cadre forwards: the XLSX workbook (``xlsx``) and the rate chart PNG (``chart``)."""
