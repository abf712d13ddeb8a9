"""The edge–cloud wire protocol, sans-IO: messages, codec, framing, handshake, session table."""
