"""`tandem deploy`: both templates, both regions, in order, through the real SAM CLI (AWS) or the twin's API."""
