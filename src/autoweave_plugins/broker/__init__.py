"""Host capabilities offered to plugins: brokered HTTP, metrics and logs. Trusted code."""
