"""guard.common: the guard's vocabulary: settings, types, the signal table, the store, room and histograms."""
