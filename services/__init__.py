"""The four torviz services: coordinator, tracker agent, peer agent, storage agent."""
