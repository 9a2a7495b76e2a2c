from wavegen.cli import run
from wavegen.signals import end_program

if __name__ == "__main__":
    end_program(run())
