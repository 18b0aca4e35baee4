"""Superposition analyses: Toy Models of Superposition (TMS) and Bag-of-Words Superposition (BOWS).

Every analysis here is a plain function on tensors (a weight matrix W of shape [..., d, n] whose
columns W_i are the n features' directions in a d-dimensional hidden space, or activations), plus
a thin wrapper that reads those tensors from any hooked model through hook names:

* :mod:`.weights`: how a feature matrix is read through a hook (the hook's response to each
  basis input, minus its response to the zero input), and the output bias the same way.
* :mod:`.geometry`: feature dimensionality D_i, dimensions per feature D*, which features are
  represented, antipodal pairs, regular polygons; registered as ``feature-dimensionality`` and
  ``feature-geometry``.
* :mod:`.phase`: the n = 2, m = 1 phase diagram (is the extra feature ignored, given its own
  dimension, or stored in superposition?).
* :mod:`.groups`: word-group structure (co-occurrence correlation, 2D PCA of unit-normalised
  columns with a cyclic-order test, ||G - diag G||_F, clusters vs forced groups); registered as
  ``group-geometry``.
* :mod:`.interference`: constructive interference (pre_v decomposition, per-feature R^2 in
  context vs alone); registered as ``interference``.
* :mod:`.plots`: the figures (matplotlib, imported only when drawing).
"""
