//! What each key's turns used: written to the store at each turn's end (so every node and a
//! restart see it), and counted in `/metrics` by key name.
