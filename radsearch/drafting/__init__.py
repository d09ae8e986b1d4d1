"""Report drafting: a first draft of a study's report from its neighbours' reports, with citations."""
