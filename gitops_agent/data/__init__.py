"""The warehouse broker: the model's code queries the repository's databases through a Unix socket
while the URLs and their passwords stay in the agent's process (issue 25)."""
