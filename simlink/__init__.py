"""The simulator behind simulate.py: link profiles, workloads, a virtual-time link and the report.

simulate.py is the command; this package holds what it is made of, so each part can be tested
on its own. The protocol code it drives is the project's own (protocol/, onboard/, ground/).
"""
