"""What on-call runs first: the cluster health report (``health``), conservative repair from it (``repair``),
log collection (``logs``) and the CIS scan (``cis``)."""
