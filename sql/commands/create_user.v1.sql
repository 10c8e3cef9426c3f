-- command: create_user
-- version: 1
-- key: email
-- description: Register a user.
INSERT INTO users (name, email) VALUES (:name, :email);
