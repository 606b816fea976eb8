"""What the papers ran: the per-domain table and the protocols (`domains`), the method registry (`methods`)."""
