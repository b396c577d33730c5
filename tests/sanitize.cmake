# The sanitizer configuration of the suite: configures and builds this project again, CPU only,
# with AddressSanitizer + UndefinedBehaviorSanitizer (leak checking on), and runs its doctest suite
# with FATTN_TEST_QUICK=1 so the instrumented run stays within minutes on two cores.
# Usage: cmake -DSOURCE_DIR=<repo> -DBINARY_DIR=<build>/asan -DGENERATOR=<generator> -P sanitize.cmake
cmake_minimum_required(VERSION 3.24)
function(run_step what)
  string(TIMESTAMP started "%s")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE failed)
  string(TIMESTAMP finished "%s")
  math(EXPR seconds "${finished} - ${started}")
  if(failed)
    message(FATAL_ERROR "sanitizer run: ${what} failed (${failed}) after ${seconds} s")
  endif()
  message(STATUS "sanitizer run: ${what} took ${seconds} s")
endfunction()

run_step("configure" ${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${BINARY_DIR} -G ${GENERATOR}
  -DCMAKE_BUILD_TYPE=RelWithDebInfo
  -DFATTN_SANITIZE=address,undefined
  -DFATTN_CUDA=OFF -DFATTN_BUILD_BENCH=OFF -DFATTN_BUILD_EXAMPLES=OFF)
run_step("build" ${CMAKE_COMMAND} --build ${BINARY_DIR} --target fattn_tests)
run_step("test suite" ${CMAKE_COMMAND} -E env
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:strict_string_checks=1
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  FATTN_TEST_QUICK=1
  ${BINARY_DIR}/tests/fattn_tests)
