# The consumer test (cmake -P): uses an installed fattn exactly as a user would.
#   1. cmake --install FATTN_BUILD_DIR --prefix WORK_DIR/prefix
#   2. examples/c and examples/cpp configured with find_package(fattn) (CMAKE_PREFIX_PATH), built, run
#   3. examples/c/attention.c compiled with the flags of `pkg-config --cflags --libs fattn`, run
# Any failing step fails the test with its output. Inputs: FATTN_BUILD_DIR, EXAMPLES_DIR, WORK_DIR,
# LIBDIR (CMAKE_INSTALL_LIBDIR), GENERATOR, C_COMPILER, CXX_COMPILER.

function(step description)
  message(STATUS "consumer: ${description}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE result OUTPUT_VARIABLE output ERROR_VARIABLE output)
  message("${output}")
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "consumer: ${description} failed (${result})")
  endif()
endfunction()

set(prefix ${WORK_DIR}/prefix)
file(REMOVE_RECURSE ${WORK_DIR})
step("install to ${prefix}" ${CMAKE_COMMAND} --install ${FATTN_BUILD_DIR} --prefix ${prefix})

set(compiler_c -DCMAKE_C_COMPILER=${C_COMPILER})
set(compiler_cpp -DCMAKE_CXX_COMPILER=${CXX_COMPILER})
foreach(language c cpp)
  set(build ${WORK_DIR}/${language})
  step("configure examples/${language} with find_package(fattn)"
    ${CMAKE_COMMAND} -S ${EXAMPLES_DIR}/${language} -B ${build} -G ${GENERATOR}
      -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_BUILD_TYPE=Release ${compiler_${language}})
  step("build examples/${language}" ${CMAKE_COMMAND} --build ${build})
  step("run examples/${language}" ${build}/attention)
endforeach()

find_program(PKG_CONFIG NAMES pkg-config pkgconf REQUIRED)
set(ENV{PKG_CONFIG_PATH} ${prefix}/${LIBDIR}/pkgconfig)
execute_process(COMMAND ${PKG_CONFIG} --cflags --libs fattn
  RESULT_VARIABLE result OUTPUT_VARIABLE flags ERROR_VARIABLE flags OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT result EQUAL 0)
  message(FATAL_ERROR "consumer: pkg-config --cflags --libs fattn failed: ${flags}")
endif()
message(STATUS "consumer: pkg-config --cflags --libs fattn: ${flags}")
execute_process(COMMAND ${PKG_CONFIG} --variable=includedir fattn OUTPUT_VARIABLE includedir
  OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT EXISTS ${includedir}/fattn.h)
  message(FATAL_ERROR "consumer: fattn.pc points at ${includedir}, which has no fattn.h: the .pc file "
    "must follow the prefix given to cmake --install (e.g. prefix=\${pcfiledir}/../..)")
endif()
separate_arguments(flags UNIX_COMMAND "${flags}")
# The program must load the installed library, not one found elsewhere: rpath to the prefix.
step("compile examples/c/attention.c with pkg-config's flags"
  ${C_COMPILER} -std=c99 ${EXAMPLES_DIR}/c/attention.c ${flags} -lm
    -Wl,-rpath,${prefix}/${LIBDIR} -o ${WORK_DIR}/attention_pkgconfig)
step("run the pkg-config build" ${WORK_DIR}/attention_pkgconfig)
