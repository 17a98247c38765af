"""Lab exercise checks for students, and the instructor tools that release and grade labs."""
