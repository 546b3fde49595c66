"""Team policies: what routes a team may use, what it may spend, and the history of edits."""
