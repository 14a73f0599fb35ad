"""The rules of the three ways a profile is set, as plain Python (no Django, no ORM): each
module says what its mode decides; the services write what it decides.

- SELECT has no rule of its own: the user sets strengths (services/profiles.profile_update,
  api/profiles.py, the chat and profile pages in steering/views.py).
- CALIBRATE: `calibrate.py`, its writes in services/profiles.py (calibration_*), its API in
  api/calibrate.py, the browser's side in static/js/calibrate.js.
- LEARN: `learn.py`, its writes in services/feedback.py, its task in tasks.py, its API in
  api/learn.py.
"""
