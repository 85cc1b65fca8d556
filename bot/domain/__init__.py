"""Platform-free domain: members, units, rounds, quizzes, statistics, replies as data."""
