"""Challenge metrics, region Dice and comparisons with published results."""
