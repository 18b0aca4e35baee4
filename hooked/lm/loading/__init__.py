"""Room ``loading``: getting a language model and its texts from disk, offline.

* :mod:`.loader`: :func:`hooked.lm.load` and its steps (embedded GGUF files, conversion into a
  cached Hugging Face folder, ``from_pretrained``, a backend around the result).
* :mod:`.folders`: checks of a model folder and the manifest of a cached conversion.
* :mod:`.placement`: models split over devices, the CPU and disk (accelerate).
* :mod:`.command_line`: ``--model PATH`` and ``--data texts.txt`` on the command line.
"""
