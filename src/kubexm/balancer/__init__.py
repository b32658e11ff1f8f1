"""The highly available API endpoint: which hosts balance, on which port, and the configs they run."""
