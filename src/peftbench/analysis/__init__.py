"""Statistics over stored runs (intervals, paired tests) and the recommendation computed from them."""
