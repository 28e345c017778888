"""The ``defects`` pipeline: boxes of 5 defect classes on 8 views of a cutting tool, trained semi-supervised (Soft
Teacher) with a multi-view Faster R-CNN. Design notes: ``docs/defects_design.md``."""
