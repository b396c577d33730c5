# Checks that the shared library exports the C ABI and nothing else: every defined dynamic symbol
# starts with fattn_ (Eigen, libstdc++ instantiations and the static CUDA runtime stay hidden), and
# every function of include/fattn.h is there.
# Usage: cmake -DLIBRARY=<libfattn.so> -DNM=<nm> -P check_exports.cmake
cmake_minimum_required(VERSION 3.24)
execute_process(COMMAND ${NM} -D --defined-only ${LIBRARY}
  OUTPUT_VARIABLE listing RESULT_VARIABLE failed)
if(failed)
  message(FATAL_ERROR "${NM} -D --defined-only ${LIBRARY} failed")
endif()

string(REPLACE "\n" ";" lines "${listing}")
set(foreign "")
set(exported "")
foreach(line IN LISTS lines)
  if(NOT line MATCHES "^[0-9a-fA-F]* *([A-Za-z]) (.+)$")
    continue()
  endif()
  set(kind ${CMAKE_MATCH_1})
  set(name ${CMAKE_MATCH_2})
  if(kind STREQUAL "A")  # version nodes, not code or data
    continue()
  endif()
  if(name MATCHES "^fattn_")
    list(APPEND exported ${name})
  else()
    list(APPEND foreign ${name})
  endif()
endforeach()

if(foreign)
  list(LENGTH foreign count)
  list(JOIN foreign "\n  " shown)
  message(FATAL_ERROR "${LIBRARY} exports ${count} symbols outside the C ABI:\n  ${shown}")
endif()
foreach(function fattn_version_number fattn_version_string fattn_status_string fattn_last_error
                 fattn_backend_available fattn_create fattn_destroy fattn_get_backend fattn_set_stream
                 fattn_forward fattn_backward)
  if(NOT function IN_LIST exported)
    message(FATAL_ERROR "${LIBRARY} does not export ${function}")
  endif()
endforeach()
list(LENGTH exported count)
message(STATUS "${LIBRARY}: exports ${count} symbols, all fattn_*")
