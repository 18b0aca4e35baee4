"""Paper reproductions: each module registers one ``hooked repro NAME`` command.

A reproduction trains what it needs, runs the analyses through hook names, prints what it found
beside the paper's claim, and writes JSON and PNG files into its run folder.
"""
