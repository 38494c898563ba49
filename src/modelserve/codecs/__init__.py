"""Wire formats <-> numpy: pure functions shared by the front-ends."""
