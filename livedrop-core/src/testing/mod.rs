//! The conformance suite every adapter runs, and mocks of the ports.
