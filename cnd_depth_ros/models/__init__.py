"""Pure PyTorch networks (CND family and the FCRN baseline) and the model artifact."""
