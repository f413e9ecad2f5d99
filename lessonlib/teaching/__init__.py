"""Teaching tools: quizzes and their bank, exercise checkers, study times, the environment check."""
