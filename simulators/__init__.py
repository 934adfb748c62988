"""Stand-ins for the real world: telecare units, modems, Alexa, Twilio. They speak the same wire formats."""
