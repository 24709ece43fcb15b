"""Policy enforcement points: the MCP gateway and the HTTP gateway, and the step they share."""
