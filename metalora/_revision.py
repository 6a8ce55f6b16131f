"""The commit of this code when it was exported with ``git archive`` (no .git folder to ask).

``.gitattributes`` marks this file ``export-subst``: git archive replaces the placeholder below with
the commit id, so a copy of the code carried to a machine without the repository still records
which revision produced its results. In a git checkout the placeholder stays and git is asked.
"""

ARCHIVED_REVISION = "$Format:%H$"
