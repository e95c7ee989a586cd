"""HTTP adapters: the controller SDK client and the wire types shared with the server."""
