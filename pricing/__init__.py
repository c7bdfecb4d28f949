# The request-time modules load compiled when a build of their current source exists
# (gateway/compiled.py); whichever app is imported first installs the finder.
from gateway.compiled import install

install()
