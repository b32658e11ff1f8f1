"""Tasks by domain: named, reusable lists of steps with their target hosts and strategy."""
