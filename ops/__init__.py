"""Operations on a running stack (local or on AWS): redrive, export events, erase a user."""
