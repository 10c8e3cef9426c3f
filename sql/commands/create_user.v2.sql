-- command: create_user
-- version: 2
-- key: email
-- description: Register a user with the name to address them by; display_name null means their name.
INSERT INTO users (name, email, display_name)
VALUES (:name, :email, COALESCE(:display_name::text, :name));
