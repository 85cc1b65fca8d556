"""hoctap-bot: study rounds and quizzes for Party members on Telegram and Zalo."""
