"""What a generation leaves behind besides the pixels: infotext, grids, and cleaning up interrupted writes."""
