"""Architecture experiments on real MNIST (survey section 2: table 1, DSOD, efficient networks)."""
