"""Document files (quizzes/*.yaml): validation with file:line:field messages, loading."""
