"""The whole pipeline through the nnU-Net commands, and the report."""
