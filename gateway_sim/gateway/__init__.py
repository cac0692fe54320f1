"""The simulated Mexican eCERT gateway: issues, signs, sends through the relay, tracks receipts."""
