"""Developer and deployment tools shipped with the gateway."""
