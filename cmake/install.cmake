# Install rules: header, shared library, CMake package (fattn::fattn) and pkg-config file.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

install(TARGETS fattn EXPORT fattnTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(FILES ${PROJECT_SOURCE_DIR}/include/fattn.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

set(FATTN_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/fattn)
install(EXPORT fattnTargets NAMESPACE fattn:: DESTINATION ${FATTN_CMAKE_DIR})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/fattnConfig.cmake.in
  ${PROJECT_BINARY_DIR}/fattnConfig.cmake INSTALL_DESTINATION ${FATTN_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/fattnConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/fattnConfig.cmake ${PROJECT_BINARY_DIR}/fattnConfigVersion.cmake
  DESTINATION ${FATTN_CMAKE_DIR})

# pkg-config: the prefix is found from the .pc file's own location, so `cmake --install --prefix X`
# (and moving the installed tree) keeps it right.
file(RELATIVE_PATH FATTN_PC_PREFIX_FROM_PCFILEDIR
  ${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBDIR}/pkgconfig ${CMAKE_INSTALL_PREFIX})
configure_file(${PROJECT_SOURCE_DIR}/fattn.pc.in ${PROJECT_BINARY_DIR}/fattn.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/fattn.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
