"""bounce(8): delivery status notifications in Postfix's wording."""
